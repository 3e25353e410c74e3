"""The timetravel debugger app: a Bokeh directory app, installed as ``timetravel.server_app``.

Started by ``timetravel serve RUN`` or ``bokeh serve server_app --args RUN`` (the same thing):
``app_hooks.py`` opens the run once per server (:mod:`context`), ``main.py`` builds each
session's page from one module per view (:mod:`canvas`, :mod:`timeline`, :mod:`filters`,
:mod:`inspector`, :mod:`recommendations`) and one controller per job (:mod:`time_travel`,
:mod:`interaction`, :mod:`inspecting`, :mod:`reviewing`) over the session's state
(:mod:`session`). Browser-side JavaScript and CSS are in ``assets/``.
"""
