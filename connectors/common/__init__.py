"""What every connector shares."""
