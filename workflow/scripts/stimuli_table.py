"""Rule stimuli_table: the images the configured subjects saw."""
from brainldm.ingest import stimuli_table
from brainldm.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    i = snakemake.input
    stimuli_table(
        dict(zip(snakemake.params.subjects, i.responses)), snakemake.params.n_sessions, i.stim_info, i.stimuli,
        {"train2017": i.captions_train, "val2017": i.captions_val}, snakemake.output[0],
    )
