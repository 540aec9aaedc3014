// Vite's `?raw` imports (fixture files read as strings in workerd tests).
declare module "*?raw" {
  const text: string;
  export default text;
}
