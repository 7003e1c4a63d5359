"""Credentials never reach a terminal or a log: every ``scheme://user:password@`` becomes
``scheme://user:***@``.

A tracking URI may carry a password (``http://user:password@host:5000``), and the libraries
that fail on it repeat it: MLflow's request errors name the whole URL, and Prefect logs them
with their tracebacks. So the text is masked where it leaves the process: in what the CLI
prints (``flows.cli.main``) and in every log record (:func:`mask_log_records`), not at each
place that might mention a URI.
"""

from __future__ import annotations

import logging
import re
import traceback

# scheme://user:password@ ; the password runs to the last "@" before the host (an unencoded
# "@" in it must not leave its tail visible), never past whitespace, quotes or the path
CREDENTIALS = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:'\"]*:)[^\s/?#'\"]*@")


def mask_credentials(text: str) -> str:
    """``text`` (a URI, a message, a traceback) with every URL password replaced by ``***``."""
    return CREDENTIALS.sub(r"\g<head>***@", text)


def _masking(make_record):
    def make(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:   # a bad format string: logging reports it when the record is emitted
            return record
        if (masked := mask_credentials(message)) != message:
            record.msg, record.args = masked, ()
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            if (masked := mask_credentials(text)) != text:
                # formatters append exc_text as it is; without exc_info none renders the original
                record.exc_text, record.exc_info = masked, None
        return record

    make.masks_credentials = True
    return make


def mask_log_records() -> None:
    """Mask credentials in every log record this process creates from now on, tracebacks
    included, whichever library logs it and whichever handler (terminal, Prefect's API) emits
    it. Idempotent."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "masks_credentials", False):
        logging.setLogRecordFactory(_masking(factory))
