"""Language models: offline GGUF models (:mod:`.gguf`), loading by name (:mod:`.loading`), the model
zoo (:mod:`.zoo`) and the NLL backends that score windows (:mod:`.backends`)."""
