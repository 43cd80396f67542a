"""Studies that measure a method against a gold reward: ``sim_study`` (token vs sequence supervision on the
simulated tasks, ``finealign sim study``), its summaries (``sim_summary``) and plots (``sim_plots``). See
docs/sim.md."""
