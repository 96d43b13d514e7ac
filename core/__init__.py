"""Transfer Learning Lab engine: everything testable without Streamlit."""

__all__ = ["TLabError"]

from core.errors import TLabError
