"""Proofreading in a browser: flags from the checks and the detector, reviewed in Neuroglancer.

* :mod:`.flags` collects what to look at (rule findings, detector scores) in priority order;
* :mod:`.sites` groups the node flags into error sites, one flag and one coherent fix each;
* :mod:`.session` is the review record (REVIEW.json): decisions, undo, resume;
* :mod:`.apply` turns a finished review into a corrected SWC, an edit log and ``.apo`` markers;
* :mod:`.layers`, :mod:`.review` and :mod:`.view` build and serve the Neuroglancer viewer (they
  import ``neuroglancer``; the other modules do not, so they stay cheap to import).

Only the command line imports this package; it imports :mod:`neurorecon.io`,
:mod:`neurorecon.morphology` and :mod:`neurorecon.qc`, never the other way round.
"""
