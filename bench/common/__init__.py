"""What more than one benchmark measures the same way."""
