using System.Net.Http;

namespace Kintsugi.Protocol;

/// <summary>
/// What a user is told when a request to the server fails below HTTP. HttpClient's own message is often only "An
/// error occurred while sending the request"; the cause (the peer closed the connection during the TLS handshake, a
/// name that does not resolve, a reset) is in its innermost exception, so both are said.
/// </summary>
public static class TransportFailure
{
    public static string Describe(HttpRequestException e)
    {
        var cause = e.GetBaseException();
        return ReferenceEquals(cause, e) || e.Message.Contains(cause.Message, StringComparison.Ordinal)
            ? e.Message
            : $"{e.Message.TrimEnd('.')}: {cause.Message}";
    }
}
