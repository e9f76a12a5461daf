// The two snippets of Dart's cancellation_token README, in C++: one request
// cancelled, and three requests under one token waited for together; then
// the same three in a TaskGroup, which does not return before their
// connections are closed.
//
//   many_requests [BASE_URL]
//
// BASE_URL serves /a, /b, /c and /slow (which never answers); without it,
// the example starts such a server on 127.0.0.1 itself (at the bottom).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "cancellable/cancellable.hpp"
#include "cancellable/http.hpp"

std::string start_local_server();

int main(int argc, char** argv) {
  const std::string base = argc > 1 ? argv[1] : start_local_server();
  using namespace cancellable;
  http::Client client;

  // [snippet: one request]
  // Dart: final token = CancellationToken();
  //       final response = http.get(url, cancellationToken: token);
  //       token.cancel();
  CancellationToken token;
  Future<http::Response> response = client.get(base + "/slow", token);
  token.cancel();  // the future has failed when cancel() returns
  try {
    response.get();
  } catch (const CancelledException& e) {
    std::cout << "one request: " << e.what() << "\n";
  }
  // [end snippet]

  // [snippet: three requests]
  // Dart: await Future.wait(urls.map((u) => http.get(u, cancellationToken: token)));
  CancellationToken batch;
  std::vector<Future<std::string>> bodies;
  for (const char* path : {"/a", "/b", "/c"}) bodies.push_back(client.read(base + path, batch));
  for (const std::string& body : when_all(bodies).get()) std::cout << "three requests: " << body << "\n";
  // [end snippet]

  // [snippet: task group]
  // One token over a group that cannot be left while a request runs: the
  // first failure (or a cancel) stops the others, and join() waits until
  // every connection is closed.
  TaskGroup group;
  for (const char* path : {"/a", "/slow", "/c"}) {
    (void)group.spawn([&, path](const CancellationToken& t) {
      http::Request request;
      request.url = base + path;
      return client.start(std::move(request), t);
    });
  }
  auto first = group.when_any([&](const CancellationToken& t) { return client.read(base + "/b", t); },
                              [&](const CancellationToken& t) { return client.read(base + "/slow", t); });
  std::cout << "task group: when_any took request " << first.get().index << ": " << first.get().value << "\n";
  group.cancel();  // stops /slow
  try {
    group.join().get();
  } catch (const CancelledException&) {
    std::cout << "task group: joined once the cancelled /slow request's connection was closed\n";
  }
  // [end snippet]
  return 0;
}

// A tiny HTTP/1.1 server on 127.0.0.1, so that the example runs by itself:
// /slow never answers; any other path answers with its name.
std::string start_local_server() {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
      ::listen(listener, 16) != 0 || ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    std::perror("local server");
    std::exit(1);
  }
  std::thread([listener] {
    for (int connection; (connection = ::accept(listener, nullptr, nullptr)) >= 0;) {
      std::thread([connection] {
        std::string in;
        char buffer[4096];
        for (ssize_t n; (n = ::recv(connection, buffer, sizeof buffer, 0)) > 0;) {
          in.append(buffer, static_cast<std::size_t>(n));
          for (std::size_t end; (end = in.find("\r\n\r\n")) != std::string::npos; in.erase(0, end + 4)) {
            const std::string path = in.substr(in.find(' ') + 1, in.find(' ', in.find(' ') + 1) - in.find(' ') - 1);
            if (path == "/slow") continue;  // never answered
            const std::string body = "body of " + path;
            const std::string reply =
                "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
            (void)::send(connection, reply.data(), reply.size(), MSG_NOSIGNAL);
          }
        }
        ::close(connection);
      }).detach();
    }
  }).detach();
  return "http://127.0.0.1:" + std::to_string(ntohs(address.sin_port));
}
