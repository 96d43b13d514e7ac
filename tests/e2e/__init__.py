"""Browser tests: the real app under `streamlit run`, driven by Debian's chromium (a package, so its
server and browser fixtures end with its last test, not with the whole session)."""
