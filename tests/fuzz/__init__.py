"""Fuzz harnesses (atheris): ``make fuzz`` for long runs, test_fuzz.py for CI's bounded run."""
