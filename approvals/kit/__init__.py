"""What agents use to receive Countersign callbacks (no Django needed)."""
