"""The application layer: from the ``bayesrnn`` command to a finished run directory.

``cli`` parses the command line; ``config``, ``presets`` and ``config_files`` resolve the
settings; ``setup`` builds data, model and guide; ``pipeline`` runs a task (``lm_task``,
``classifier_task``) into a run directory (``run_dir``, ``run_data``, ``run_lock``);
``trained_run`` opens a finished one. The library below (``bayesrnn.data``, ``models``,
``inference``, ``evaluation``) never imports from here.
"""
