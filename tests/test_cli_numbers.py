"""Numbers checked where they are parsed (issue 34): values no machine holds (10**400, inf, nan, 1e400) and values
out of range end in one line naming the flag, the value and the allowed range, exit 2, before anything loads."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mega2bart.cli import ERROR_EXIT_CODE, app

runner = CliRunner()
HUGE = str(10**400)


def _refused(args: list[str], *needles: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == ERROR_EXIT_CODE, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    message = result.output.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--length", HUGE], ["--length (an integer of 401 digits) must be a whole number in [1, 10,000,000]"]),
        (["--length", "0"], ["--length (0) must be a whole number in [1, "]),
        (["--batch", HUGE], ["--batch (an integer of 401 digits)", "[1, 65,536]"]),
        (["--beams", "5000"], ["--beams (5000)", "[1, 1,024]"]),
        (["--new-tokens", str(10**9)], ["--new-tokens (1000000000) must be a whole number in [1, 10,000,000]"]),
        (["--label-tokens", "-3", "--task", "train"], ["--label-tokens (-3)"]),
        (["--tflops", "inf", "--json"], ["--tflops (inf) must be a finite number in [1e-06, 1,000,000.0]"]),
        (["--tflops", "nan"], ["--tflops (nan)"]),
        (["--device-memory", "nan"], ["--device-memory ('nan') must be a memory size above 0 and at most 1 EiB"]),
        (["--device-memory", "inf"], ["--device-memory ('inf')"]),
        (["--device-memory", "1e400"], ["--device-memory ('1e400')"]),
        (["--device-memory", "-2GiB"], ["--device-memory ('-2GiB')"]),
    ],
)
def test_plan_numbers(args, needles):
    _refused(["plan", "tiny", *args], *needles)


def test_plan_answers_a_long_generation_at_once():
    """The decoding steps' FLOPs are summed in closed form: the same figure as step by step, for any length."""
    from mega2bart.plan import Workload, decoder_token_flops, load_shape
    from mega2bart.plan.predict import MatmulRate
    from mega2bart.plan.timing import _flops_and_seconds

    shape, rate = load_shape("tiny"), MatmulRate(1.0, 0.15, "given")
    workload = Workload(length=512, batch=2, beams=3, new_tokens=37)
    flops, _ = _flops_and_seconds(shape, workload, rate)
    by_step, _ = _flops_and_seconds(shape, Workload(length=512, batch=2, beams=3, new_tokens=1), rate)
    step_one = 6 * decoder_token_flops(shape, 1, 512)
    steps = sum(6 * decoder_token_flops(shape, t + 1, 512) for t in range(37))
    assert flops == pytest.approx(by_step - step_one + steps, rel=1e-12)
    long, _ = _flops_and_seconds(shape, Workload(length=512, new_tokens=10**7), rate)  # at once, not 10**7 steps
    assert long > flops


@pytest.mark.parametrize(
    "args, needles",
    [
        (
            ["build", "{tmp}/out", "--preset", "tiny", "--random-init", "--seed", str(2**64)],
            ["--seed (18446744073709551616) must be a whole number in [0, 4,294,967,295]"],
        ),
        (
            ["build", "{tmp}/out", "--preset", "tiny", "--random-init", "--num-beams", HUGE],
            ["--num-beams (an integer of 401 digits)"],
        ),
        (
            ["summarize", "{model}", "{tmp}/doc.txt", "--output", "{tmp}/out.jsonl", "--max-input-tokens", "20000000"],
            ["--max-input-tokens (20000000) must be a whole number in [3, 10,000,000]"],
        ),
        (
            ["summarize", "{model}", "{tmp}/doc.txt", "--output", "{tmp}/out.jsonl", "--batch-size", HUGE],
            ["--batch-size (an integer of 401 digits)"],
        ),
        (
            ["summarize", "{model}", "{tmp}/doc.txt", "--output", "{tmp}/out.jsonl", "--max-new-tokens", HUGE],
            ["--max-new-tokens (an integer of 401 digits)"],
        ),
        (
            ["eval", "{model}", "--output-dir", "{tmp}/eval", "--batch-size", HUGE],
            ["--batch-size (an integer of 401 digits)", "[1, 65,536]"],
        ),
        (["eval", "{model}", "--output-dir", "{tmp}/eval", "--seed", "-1"], ["--seed (-1)"]),
        (["eval", "{model}", "--output-dir", "{tmp}/eval", "--bootstrap-samples", HUGE], ["--bootstrap-samples"]),
        (["fill-mask", "a <mask>", "--preset", "tiny", "--top-k", "0"], ["--top-k (0) must be a whole number in [1, "]),
        (
            ["train", "--model", "{model}", "--output-dir", "{tmp}/run", "--batch-size", HUGE],
            ["`per_device_train_batch_size` (an integer of 401 digits) must be at most 2**63 - 1"],
        ),
        (
            ["train", "--model", "{model}", "--output-dir", "{tmp}/run", "--learning-rate", "1e400"],
            ["`learning_rate` (inf) must be a finite number"],
        ),
        (
            ["pretrain", "--encoder", "tiny", "--output-dir", "{tmp}/run", "--max-documents", HUGE],
            ["`max_documents` (an integer of 401 digits)"],
        ),
    ],
)
def test_command_numbers(tiny_mega2bart_dir, tmp_path, args, needles):
    (tmp_path / "doc.txt").write_text("A short document.")
    filled = [arg.format(tmp=tmp_path, model=tiny_mega2bart_dir) for arg in args]
    before = sorted(path.name for path in tmp_path.iterdir())
    _refused(filled, *needles)
    assert sorted(path.name for path in tmp_path.iterdir()) == before  # nothing written


def test_summarizer_names_max_input_tokens_not_the_tokenizer(tiny_mega2bart_dir):
    """`--max-input-tokens 20000000` was blamed on "the tokenizer has no usable model_max_length"."""
    from mega2bart.summarize import Summarizer

    with pytest.raises(ValueError, match=r"^max_input_tokens \(20000000\) must be in \[1, 10,000,000\] tokens$"):
        Summarizer.load(tiny_mega2bart_dir, max_input_tokens=20_000_000)
