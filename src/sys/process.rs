//! Process control for the fork backend: fork, waitpid, kill.
