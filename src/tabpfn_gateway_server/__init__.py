"""The optional self-hosted gateway server (FastAPI): ``create_app(settings)``."""
