"""Continual learning on the device (`mupriv continual`): a patient's records arrive in stages, the device keeps
a small memory between them (nothing, everything, a random or herded subset, or distilled synthetic records),
and the accuracy matrix over stages shows what each memory keeps and forgets.

scenario: the stages of each synthetic patient; memory: the memory budget and the real-record selections;
distill: dataset distillation by distribution matching; metrics: accuracy matrix, average accuracy, backward
transfer and forgetting; run: the stage loop; output: the run folder's files, plot and report.
"""
