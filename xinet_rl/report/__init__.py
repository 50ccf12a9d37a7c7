"""Reading finished runs, aggregate statistics (rliable) and plots for comparisons across seeds."""
