"""The build layer: torch. May import toolkit.edge; toolkit.edge never imports it."""
