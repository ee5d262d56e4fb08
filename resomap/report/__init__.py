"""The aggregate stage: read the study, test and fit across resolutions, write tables, charts, a report."""
