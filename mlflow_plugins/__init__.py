"""MLflow plugins and the layer-patch model flavor."""
