// The two transports a server session runs on: TCP and TLS over TCP.
#include "server/session.hpp"

#include <boost/asio/ssl/context.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include "server/basic_session.hpp"

namespace agentws::detail {

std::shared_ptr<session> make_session(boost::asio::ip::tcp::socket socket,
                                      std::shared_ptr<server_state> state,
                                      boost::asio::ssl::context* tls) {
  namespace beast = boost::beast;
  if (tls) {
    return std::make_shared<basic_session<beast::ssl_stream<beast::tcp_stream>>>(
        std::move(state), std::move(socket), *tls);
  }
  return std::make_shared<basic_session<beast::tcp_stream>>(std::move(state), std::move(socket));
}

}  // namespace agentws::detail
