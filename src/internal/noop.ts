/**
 * noop does nothing: one shared function for ignored rejections
 * (`.catch(noop)`) and empty callbacks, instead of a new closure each time.
 */
export function noop(): void {}
