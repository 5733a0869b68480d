"""The torch layer: training and export. May import toolkit.edge; toolkit.edge never imports it."""
