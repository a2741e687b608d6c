namespace Kintsugi.Server.Api;

/// <summary>
/// A refusal by the HTTP edge itself (authentication, body size and media type, query syntax), reported as an
/// RFC 9457 problem document with this status. The fleet's own refusals are <see cref="FleetException"/>s,
/// mapped to a status in <see cref="Http.Problem"/>.
/// </summary>
public sealed class ApiProblem(int status, string title, string detail) : Exception(detail)
{
    public int Status { get; } = status;
    public string Title { get; } = title;

    public static ApiProblem BadRequest(string detail) => new(400, "invalid request", detail);
    public static ApiProblem Unauthorized(string detail) => new(401, "not authenticated", detail);
    public static ApiProblem Forbidden(string detail) => new(403, "not allowed", detail);
    public static ApiProblem NotFound(string detail) => new(404, "not found", detail);
}
