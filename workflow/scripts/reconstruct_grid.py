"""Rule reconstruct_grid: recons.h5 -> grid.png."""
from brainldm.logs import redirect_to_log
from brainldm.reconstruct import draw_grid

with redirect_to_log(snakemake.log[0]):
    draw_grid(
        recons_h5=snakemake.input[0],
        grid_png=snakemake.output[0],
        settings=dict(snakemake.params.settings),
        subject=snakemake.wildcards.subject,
    )
