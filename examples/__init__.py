"""Worked examples of user code that sweep runs (see docs/tutorial.md, "Your own problem")."""
