# Review of the job system's failure paths (issue 4): fake trainers and a fake
# broker speaking the protocol against the real mlq-broker and mlq-trainer.
mlq_add_test(test_broker_review SOURCES test_broker_review.c broker_harness.c
             LIBS mlq_runner mlq_store mlq_common PkgConfig::ZMQ PkgConfig::HDF5 TIMEOUT 300)
add_dependencies(test_broker_review mlq-broker mlq-trainer mlq)
