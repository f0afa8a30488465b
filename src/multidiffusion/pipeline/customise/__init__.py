"""Control and customisation requests of a run: what the user asks for, checked, and applied."""
