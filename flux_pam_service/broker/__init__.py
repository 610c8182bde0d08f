"""The pam broker module: journal follower, dispatcher, per-user scheduler."""
