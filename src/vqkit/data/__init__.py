"""What every modality's datasets share: file walks that never visit a file twice, the flat-folder
hold-out, the bad-file policy, seeded loaders (:mod:`.files`). The datasets themselves live with their
modality (:mod:`vqkit.modalities.image`, :mod:`vqkit.modalities.audio`)."""
