// apps/cnf/launch.h — `cnf train --nproc N`: N local worker processes of one group.
#pragma once

namespace cnf::app {

/// Runs `nproc` copies of this program (/proc/self/exe with the same arguments) as ranks
/// 0 .. nproc-1 of one group on the loopback interface (RANK, WORLD_SIZE, MASTER_ADDR and a
/// free MASTER_PORT in their environment), and waits for them. SIGINT/SIGTERM are forwarded
/// to every rank. When a rank fails or dies, the others get SIGTERM, then SIGKILL after
/// `grace_seconds`; the message names the rank and how it ended. Returns the exit code:
/// 0 when every rank succeeded, else rank 0's code or 1.
int launch_local(int nproc, char** argv, double grace_seconds);

/// True in a process started by launch_local (it must not launch again).
bool launched_worker();

// Keeps main's argv, which launch_workers runs again as each worker's command line.
void set_command_line(char** argv);

// launch_local with the command line main kept (set_command_line).
int launch_workers(int nproc, double grace_seconds);

}  // namespace cnf::app
