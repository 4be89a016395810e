/*
 * artifacts.h - where a job's files live: the one place that knows the
 * layout of the data folder (DATA_DIR/jobs/ID/{input, STEM.FMT, stems.zip},
 * DATA_DIR/uploads/), so that another backend (object storage) can be put
 * behind the same calls later.
 *
 * In the clustered mode every node mounts the same DATA_DIR. Every file is
 * written under a temporary name in its final folder and renamed when
 * complete (uploads: uploads/RANDOM.upload then jobs/ID/input; stems: the
 * encoder's ".part"; the zip: zip.c's ".RANDOM.part"), so no node ever
 * opens a partial file under a final name; a job's row is committed only
 * after its input is in place.
 */
#ifndef DEMIX_SERVER_ARTIFACTS_H
#define DEMIX_SERVER_ARTIFACTS_H

#include "demix/pipeline.h"
#include "server.h"

/* Sets j->dir (DATA_DIR/jobs/ID) and j->input (its "input"): 0 or -1. */
int srv_artifact_paths(srv_job *j);
/* Removes what earlier runs of the job wrote (everything but the input,
 * their run folders included). */
void srv_artifact_clear_outputs(const srv_job *j);
/* A folder of this attempt's own for the outputs (DATA_DIR/jobs/ID/run-N,
 * N = j->attempts) into j->stage: 0 or -1. */
int srv_artifact_stage(srv_job *j);
/* Renames the n stems NAMES.FORMAT from j->stage into j->dir (each rename
 * atomic: a reader sees the old file or the new one) and removes the
 * stage: 0 or -1. */
int srv_artifact_publish(const srv_job *j, char names[][DMX_MAX_STEM_NAME], int n);
/* Removes j->stage and what is in it (a failed or abandoned run). */
void srv_artifact_drop_stage(srv_job *j);
/* 1 when the job's input is there. */
int srv_artifact_input_ok(const srv_job *j);
/* Removes the job's folder and every file in it. */
void srv_artifact_remove(const char *id);
/* Removes the folders of jobs/ that is_owned(user, id) does not claim and
 * the files in uploads/, each only if untouched for min_age seconds (a
 * node may be between writing the input and committing its row). The
 * number of folders removed. */
int srv_artifact_sweep(double min_age, int (*is_owned)(void *user, const char *id), void *user);

#endif
