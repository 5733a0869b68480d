"""The build layer: torch. May import toolkit.core; toolkit.core never imports it."""
