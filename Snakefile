# brainldm's entry point is workflow/Snakefile (the layout Snakemake's workflow catalog
# and snakedeploy expect); this file only lets `snakemake` run from the repository root.
# It is what `include: "workflow/Snakefile"` compiles to, except that the included
# file's default target (rule all) stays the default target here.
workflow.include("workflow/Snakefile", overwrite_default_target=True)
