"""Model code shipped with mega2bart."""
