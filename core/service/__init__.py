"""The one way in for pages and the CLI: what a person asks for, turned into
checked configs and queued runs, and the answers both screens show.

`forms` builds a `RunConfig` from a mapping (a page's widgets, the CLI's
options), checks it once against the registries, previews its layer plan on the
meta device, checks a weights file and describes a folder of images;
`launching` makes a run and its from-scratch twin, prepares a group (checked
once: the worker checks again in its own process) and queues it, and starts
the LR finder as a background task; `looking` computes what the Inspect page
and `embed` both show. Pages import no torch and hold no training or
validation logic: they call here. This layer sits above runs, insight and
lessons and below cli; it never imports streamlit or plotly.
"""
