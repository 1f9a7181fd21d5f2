# LDM features of every stimulus a configured subject saw (see docs/contracts.md and
# src/brainldm/{models,features,feature_shards}.py): z, c, zc and U-Net activations,
# one job per family, each resumable from its shards in results/features/shards/.
include: "models.smk"


rule build_tiny_model:
    """Build the tiny Stable-Diffusion-shaped model (weights fixed by model.tiny_seed; the
    VAE trained for model.tiny_vae_steps steps on procedural scenes, then the text encoder
    and U-Net for model.tiny_unet_steps steps on the scenes' captions)."""
    input:
        vocab=os.path.join(TINY_TOKENIZER_DIR, "vocab.json"),
        merges=os.path.join(TINY_TOKENIZER_DIR, "merges.txt"),
    output:
        f"{TINY_MODEL_DIR}/model_index.json",
    params:
        seed=MODEL["tiny_seed"],
        vae_steps=MODEL["tiny_vae_steps"],
        unet_steps=MODEL["tiny_unet_steps"],
    log:
        "results/logs/features/build_tiny_model.log",
    benchmark:
        "results/benchmarks/features/build_tiny_model.tsv"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=5,
    conda:
        "../envs/cpu.yaml"
    script:
        "../scripts/build_tiny_model.py"


rule features:
    """z (VAE latents of the stimuli at features.z_resolution, x the scaling factor) or
    c (text embeddings of each stimulus's COCO captions, averaged over captions): one
    job per family, `--forcerun results/features/z.h5` reruns only that family."""
    input:
        unpack(features_inputs),
    output:
        "results/features/{family}.h5",
    wildcard_constraints:
        family="z|c",
    params:
        settings=lambda wildcards: features_settings(wildcards.family),
        model=model_param,
        local_files_only=MODEL["local_files_only"],
        device=model_device(),
    log:
        "results/logs/features/features_{family}.log",
    benchmark:
        "results/benchmarks/features/features_{family}.tsv"
    threads: FEATURES_THREADS
    resources:
        mem_mb=lambda wildcards: FEATURES_MEM_MB[wildcards.family],
        runtime=lambda wildcards: FEATURES_RUNTIME[wildcards.family],
        gpu=FEATURES_GPU,
        disk_mb=lambda wildcards: features_disk_mb(wildcards.family),
    conda:
        FEATURES_ENV
    script:
        "../scripts/features.py"


rule features_zc:
    """zc: img2img (DDIM) latents from z conditioned on c, per strength and per denoising
    fraction, and the U-Net block outputs (pooled) at features.stage_strength per fraction,
    from the same img2img pass (one denoising pass at the stage strength, not two)."""
    input:
        table="results/stimuli/stimuli.tsv",
        z="results/features/z.h5",
        c="results/features/c.h5",
        model=model_inputs(),
    output:
        zc="results/features/zc.h5",
        unet="results/features/unet.h5",
    params:
        settings=features_settings("zc", "unet"),
        model=model_param,
        local_files_only=MODEL["local_files_only"],
        device=model_device(),
    log:
        "results/logs/features/features_zc.log",
    benchmark:
        "results/benchmarks/features/features_zc.tsv"
    threads: FEATURES_THREADS
    # A job stopped by the site's time limit (or out of memory) is retried with twice
    # the time and memory; the shards it finished are reused, so each attempt goes on
    # where the previous one stopped.
    retries: 2
    resources:
        mem_mb=lambda wildcards, attempt: attempt * max(FEATURES_MEM_MB["zc"], FEATURES_MEM_MB["unet"]),
        runtime=lambda wildcards, attempt: attempt * FEATURES_RUNTIME["zc"],
        gpu=FEATURES_GPU,
        disk_mb=features_disk_mb("zc", "unet"),
    conda:
        FEATURES_ENV
    script:
        "../scripts/features_zc.py"


TARGETS += [f"results/features/{family}.h5" for family in ("z", "c", "zc", "unet")]
