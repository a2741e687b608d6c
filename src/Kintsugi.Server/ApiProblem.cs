namespace Kintsugi.Server;

/// <summary>A refusal the API reports as an RFC 9457 problem document with this status.</summary>
public sealed class ApiProblem(int status, string title, string detail) : Exception(detail)
{
    public int Status { get; } = status;
    public string Title { get; } = title;

    public static ApiProblem BadRequest(string detail) => new(400, "invalid request", detail);
    public static ApiProblem Unauthorized(string detail) => new(401, "not authenticated", detail);
    public static ApiProblem Forbidden(string detail) => new(403, "not allowed", detail);
    public static ApiProblem NotFound(string detail) => new(404, "not found", detail);
    public static ApiProblem Conflict(string detail) => new(409, "conflict", detail);
    public static ApiProblem Unprocessable(string detail) => new(422, "refused", detail);
}
