/* mlq-trainer --standalone: one job from a spec file, without a broker.
 * Prints one JSON object per epoch on stdout and a summary line last. */
#ifndef MLQ_STANDALONE_H
#define MLQ_STANDALONE_H

struct standalone_opts {
    const char *spec_path;
    const char *db_path;        /* record the run there, or NULL */
    const char *checkpoint_dir; /* write checkpoint files there, or NULL */
    const char *resume_path;    /* start from this checkpoint file, or NULL */
    int threads;                /* overrides the spec's when > 0 */
    int memory_budget_mb;       /* trainer.memory_budget_mb: the job's limit; 0 none */
};

/* Returns the process exit code: 0 succeeded, 1 failed, 2 bad spec. */
int standalone_main(const struct standalone_opts *opts);

#endif
