// Echo: every byte received is sent back, in order.
#include "concbench/session.hpp"

namespace concbench {
namespace {

class EchoSession final : public Session {
public:
    void feed(const char* data, std::size_t n) override { out_.append({data, n}); }
    void peer_closed() override { close_ = true; }
};

}  // namespace

std::unique_ptr<Session> make_echo_session() { return std::make_unique<EchoSession>(); }

}  // namespace concbench
