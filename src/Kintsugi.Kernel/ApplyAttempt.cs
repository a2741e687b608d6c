namespace Kintsugi.Kernel;

/// <summary>
/// How the last attempt to change this machine's patch level ended, so that status tells the truth when the
/// newest release could not be applied (the running level stays, and the state says <c>apply-failed</c>).
/// </summary>
/// <param name="Outcome">A shared state word: <c>applied</c>, <c>applied-with-bug</c>, <c>apply-failed</c>,
/// <c>revoked</c>.</param>
/// <param name="Bundle">The digest of the bundle concerned, when there was one.</param>
public sealed record ApplyAttempt(DateTimeOffset At, string Outcome, int? Level, string? Bundle, string Detail);
