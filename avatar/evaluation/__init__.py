"""Evaluations of the pipeline's parts and of the shipped weights, as one command with a
subcommand each (``avatar-eval`` or ``python -m avatar.evaluation``; avatar/evaluation/cli.py):

    avatar-eval pose       the pose stage's codebook search vs the poses' geometry (pose_search.py)
    avatar-eval motion     text -> pose search -> motion stage, judged by geometry (motion.py)
    avatar-eval guidance   a guidance model: retrieval, binding, pose words, colour check (guidance.py)
    avatar-eval paraphrase held-out paraphrases (paraphrases.yaml) vs the tuned prompts: pose,
                           shape and colour checks side by side (paraphrase.py)
    avatar-eval priors     the shipped priors on held-out mocap subjects (priors.py)
    avatar-eval appearance finished appearance runs: surface vs the body (distance, roughness),
                           colours per region, named or not by the prompt (appearance.py)

Each module has ``add_arguments(parser)`` and ``run(args)``; ``avatar-eval <name> --help`` prints
the module's docstring."""
