// message_link.h - tagged point-to-point messages between ranks of the job, for a service thread that
// runs beside the main thread's collectives (the server's front end and its replicas' rank 0s). It owns
// a duplicate of MPI_COMM_WORLD, so its traffic never meets the collectives', and it never blocks:
// send() posts a non-blocking send (kept until complete, so two ranks sending to each other at once
// cannot deadlock) and poll() progresses sends and takes one arrived message if there is one. Use it
// from one thread per process. Needs MPI_THREAD_MULTIPLE (mpi_thread_multiple()); without MPI it
// refuses to be made, naming why.
#pragma once

#include <memory>
#include <string>

namespace skv {

class MessageLink {
 public:
  // Collective over every rank of the job (call it on the main thread of each before any service thread).
  static std::unique_ptr<MessageLink> make_world();
  virtual ~MessageLink() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual void send(int dest, int tag, std::string bytes) = 0;
  // One arrived message (true), or none yet (false). Also progresses pending sends.
  virtual bool poll(int* source, int* tag, std::string* bytes) = 0;
  // Sends not yet complete.
  virtual size_t pending_sends() = 0;
};

// MPI was started with MPI_THREAD_MULTIPLE (a MessageLink beside the collectives needs it).
bool mpi_thread_multiple();

}  // namespace skv
