"""Plain torch networks; none of them knows Lightning."""
