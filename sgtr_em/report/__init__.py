"""Reports over a sweep: tables, paper-style figures and a static HTML page (`python -m sgtr_em.report`), and the
W&B dashboard as code. Modules: metrics (what is shown), collect (jobs from folders or W&B), aggregate (conditions,
intervals over seeds), tables, figures, page, build (all of it), dashboard."""
