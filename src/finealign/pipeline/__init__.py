"""The recipe runner (``finealign run RECIPE.yaml``): stages are the verbs' own library functions,
each writing into ``RUN_DIR/STAGE_NAME/``, resumable, skipped when done, selectable.

``recipe.load_recipe`` reads and checks a recipe (file, line and field named on every error),
``runner.plan`` resolves and validates every stage's settings, ``runner.run_recipe`` runs them.
See docs/pipeline.md.
"""
