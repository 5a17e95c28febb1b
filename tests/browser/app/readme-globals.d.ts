// What the JS examples of README.md and pkg/README.md leave to the page that uses them (package-users.test.mjs
// type-checks those examples with this file).
declare function showThinking(text: string): void;
declare function showAnswer(text: string): void;
