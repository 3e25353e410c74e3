"""The timetravel debugger app: a Bokeh server directory app (``main.py`` builds each session's document).

Started by ``timetravel serve RUN``; the run directory arrives as the app's ``sys.argv[1]``.
One module per view (:mod:`canvas`, :mod:`timeline`, :mod:`inspector`, :mod:`queue`, :mod:`filters`),
run data shared by all sessions of the process (:mod:`data`, :mod:`review`), and all callbacks wired in
:mod:`callbacks`.
"""
