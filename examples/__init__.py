"""Worked examples of user code that sweep runs (see README: "Your own problem")."""
