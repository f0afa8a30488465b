"""Ways to lay views beyond the paper's sliding window: named cheaper layouts and shifted tilings."""
