/* The broker's store of pushed datasets (docs/datasets.md, "Pushed datasets").
 *
 * Under broker.datasets_dir (default: datasets/ beside the database):
 *   objects/<sha256>         a whole file, complete, verified, fsynced, 0440
 *   objects/<sha256>.xxh128  the chunk index: the XXH3-128 sum of each
 *                            DATASET_CHUNK_BYTES chunk of it, 16 bytes each,
 *                            in order (common/chunk_sum.h)
 *   objects/<sha256>.chunks  the chunk index of an object an older broker
 *                            stored: SHA-256 sums, 32 bytes each
 *   uploads/<sha256>.part    a push in progress; its size is where the next
 *                            push of the same hash resumes
 * The database holds the names (store_dataset_*); an object is addressed by
 * the SHA-256 of its bytes, 64 lower-case hex digits. */
#ifndef MLQ_BROKER_DATASETS_H
#define MLQ_BROKER_DATASETS_H

#include <stdbool.h>
#include <stddef.h>

#define DATASETS_PATH_MAX 4096

enum chunk_index { INDEX_XXH128, INDEX_SHA256 };

/* dir/objects/<sha>, its chunk index of that kind and dir/uploads/<sha>.part
 * into buf (DATASETS_PATH_MAX bytes). 0, -EINVAL for a sha that is not 64
 * lower-case hex digits (so a path never leaves the store), or -ENAMETOOLONG. */
int datasets_object_path(const char *dir, const char *sha, char buf[DATASETS_PATH_MAX]);
int datasets_index_path(const char *dir, const char *sha, enum chunk_index kind,
                        char buf[DATASETS_PATH_MAX]);
int datasets_upload_path(const char *dir, const char *sha, char buf[DATASETS_PATH_MAX]);

/* The directory itself from the configured one (may be NULL or "") and the
 * database's path: the configured one, else datasets/ beside the database. */
int datasets_dir_resolve(const char *configured, const char *db_path, char buf[DATASETS_PATH_MAX]);

/* Creates dir, dir/objects and dir/uploads where missing (0750). 0 or
 * -errno with err naming the directory. */
int datasets_prepare(const char *dir, char *err, size_t errlen);

#endif
