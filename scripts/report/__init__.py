"""report.html of a concbench run: data.py reads the run (saying what is missing or broken),
figures.py draws its charts with plot.py and micro_plots.py, claims.py judges the essays' claims,
comparison.py sets two runs side by side; templates/report.html.j2 is the page (Jinja2)."""
