"""HTTP surface: Flask blueprints that parse requests, call services and shape responses."""
